"""The benchmark's images: a fixed sample of real JPEGs, from a folder or the dataset archive."""

import argparse
import os
import random
import tarfile
import tempfile

IMAGE_SUFFIXES = (".jpg", ".jpeg")


def image_parser(prog, description):
    """A command-line parser that already has the image options: --archive or --images, --sample."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--archive", help="a .tar.gz of class folders of JPEGs to sample from")
    source.add_argument("--images", help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--sample", type=int, default=1000, help="images to use (1000)")
    return parser


def sample_from_folder(folder, count, seed=0):
    """Pick `count` JPEGs under `folder` (searched recursively), the same ones on every run."""
    paths = sorted(os.path.join(root, name)
                   for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise SystemExit(f"no JPEG images under {folder}")
    random.Random(seed).shuffle(paths)
    return paths[:count]


def extract_sample(archive, target, count, seed=0):
    """Extract `count` JPEGs from a .tar.gz of class folders into `target`; return their paths."""
    with tarfile.open(archive) as tar:
        members = sorted((member for member in tar.getmembers()
                          if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES)),
                         key=lambda member: member.name)
        random.Random(seed).shuffle(members)
        chosen = members[:count]
        if not chosen:
            raise SystemExit(f"no JPEG images in {archive}")
        tar.extractall(target, members=chosen, filter="data")
    return [os.path.join(target, member.name) for member in chosen]


def read_images(paths):
    """The bytes of each image, in order."""
    images = []
    for path in paths:
        with open(path, "rb") as file:
            images.append(file.read())
    return images


def load_sample(args):
    """[(file name, bytes)] of the images that `image_parser`'s options name."""
    with tempfile.TemporaryDirectory() as work_dir:
        paths = (extract_sample(args.archive, work_dir, args.sample) if args.archive
                 else sample_from_folder(args.images, args.sample))
        return list(zip(map(os.path.basename, paths), read_images(paths), strict=True))
