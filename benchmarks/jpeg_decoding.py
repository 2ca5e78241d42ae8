"""What decoding an upload costs: the service's decode_image against Pillow alone.

Run from the repository root, e.g.:
    python -m benchmarks.jpeg_decoding --archive ../shared/datasets/cifar10-train.tar.gz
Each sample JPEG is decoded to the model's input size by service/runtime/images.py, which hands a
plain JPEG already at that size to libjpeg-turbo (simplejpeg), and by the same module's
Pillow path, which every other picture takes. It prints the best of --repeat passes, in µs
per image, on one thread, how many images took the direct path, and how many decoded to
pixels that differ between the two (there should be none).
"""

import numpy as np

from benchmarks.sample import image_parser, load_sample
from benchmarks.timing import microseconds_per_item
from service.config import Settings
from service.runtime import images as decoding

MAX_PIXELS = Settings.max_image_pixels  # the service's default MAX_IMAGE_PIXELS


def main(argv=None):
    parser = image_parser("python -m benchmarks.jpeg_decoding", __doc__)
    parser.add_argument("--size", type=int, default=32,
                        help="the model's input height and width (32, the shipped model's)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3,
                        help="the model's input channels (3)")
    parser.add_argument("--repeat", type=int, default=5, help="passes over the images (5)")
    args = parser.parse_args(argv)
    images = [data for _, data in load_sample(args)]
    shape = (args.size, args.size, args.channels)

    def service(data):
        return decoding.decode_image(data, *shape, MAX_PIXELS)

    def pillow(data):
        return decoding._pillow_pixels(data, *shape, MAX_PIXELS)

    direct = sum(decoding._plain_jpeg_pixels(data, *shape) is not None for data in images)
    differ = sum(not np.array_equal(service(data), pillow(data)) for data in images)
    ours = microseconds_per_item(service, images, args.repeat)
    theirs = microseconds_per_item(pillow, images, args.repeat)
    print(f"{len(images)} JPEGs of {sum(map(len, images)) // len(images):,} bytes on average, "
          f"decoded to {args.size}x{args.size}x{args.channels}; µs per image, best of "
          f"{args.repeat} passes\n")
    print("| decode_image (the service) | Pillow alone | ratio | direct | pixels differ |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {ours:.1f} | {theirs:.1f} | {theirs / ours:.1f}× | {direct} of {len(images)} "
          f"| {differ} |")


if __name__ == "__main__":
    main()
