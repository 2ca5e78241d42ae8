"""What a phone-sized photo costs to decode as JPEG, AVIF and HEIC, and what isolating costs.

Run from the repository root, with the test requirements (pillow-heif writes the HEIC):
    python -m benchmarks.photo_decoding [--photo PATH] [--rounds 7]
One picture (PATH, or a drawn 4000x3000 one with a little noise, as a sensor leaves) is
written as JPEG, AVIF and HEIC, then decoded to the model's input size by decode_image (AVIF
and HEIC in the worker's decoding process, service/runtime/isolated_decoding.py) and, for those two,
in this process as well, which is what isolation saves. The formats alternate within each
round, so a busy machine slows them alike; it prints the median ms and the range over the
rounds, each format against JPEG. Then the decoding process's start time and memory, and
what importing pi-heif costs a process.
"""

import argparse
import io
import statistics
import subprocess
import sys
import time

from PIL import Image

from service.config import Settings
from service.runtime import images, isolated_decoding
from tests import photo_files

MAX_PIXELS = Settings.max_image_pixels  # the service's default MAX_IMAGE_PIXELS
SHAPE = (32, 32, 3)  # the shipped colour model's input

IMPORT_COST = """
import resource, time
def rss(): return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
import numpy, PIL.Image
before, start = rss(), time.perf_counter()
import pi_heif
pi_heif.register_heif_opener()
print(time.perf_counter() - start, rss() - before)
"""


def photo(path, noise):
    """The picture to encode: the file at `path`, or a drawn photo-sized one with `noise`."""
    if path:
        return Image.open(path).convert("RGB")
    drawn = photo_files.twelve_megapixel_photo((200, 120, 60))
    return Image.blend(drawn, Image.effect_noise(drawn.size, 40).convert("RGB"), noise)


def encoded(picture):
    """{format: bytes} of `picture`, at the qualities phones and browsers use."""
    jpeg, heic = io.BytesIO(), io.BytesIO()
    picture.save(jpeg, "JPEG", quality=90)
    photo_files.pillow_heif.from_pillow(picture).save(heic, format="HEIF", quality=80)
    return {"JPEG": jpeg.getvalue(), "AVIF": photo_files.avif(picture, quality=80, speed=6),
            "HEIC": heic.getvalue()}


def timed(decode, data):
    """Seconds that one decode of `data` takes."""
    start = time.perf_counter()
    decode(data)
    return time.perf_counter() - start


def decoders(files):
    """{row name: (bytes, decode function)}: the service's path for each, and in-process."""
    def service(data):
        return images.decode_image(data, *SHAPE, MAX_PIXELS)

    def here(container):
        return lambda data: images._contained_pixels(data, container, *SHAPE, MAX_PIXELS)

    return {"JPEG": (files["JPEG"], service),
            "AVIF": (files["AVIF"], service), "AVIF, in the worker": (files["AVIF"], here("AVIF")),
            "HEIC": (files["HEIC"], service), "HEIC, in the worker": (files["HEIC"], here("HEIF"))}


def child_costs(files):
    """(start seconds, RSS and peak RSS in MiB) of a fresh decoding process after both formats."""
    process = isolated_decoding.DecodingProcess()
    start = timed(lambda data: process.decode(data, "AVIF", *SHAPE, MAX_PIXELS), files["AVIF"])
    start -= timed(lambda data: process.decode(data, "AVIF", *SHAPE, MAX_PIXELS), files["AVIF"])
    process.decode(files["HEIC"], "HEIF", *SHAPE, MAX_PIXELS)
    status = open(f"/proc/{process._child.pid}/status").read().splitlines()
    memory = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status
              if line.startswith(("VmRSS", "VmHWM"))}
    return start, memory["VmRSS"], memory["VmHWM"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photo_decoding",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--photo", help="a photo to encode (default: a drawn 4000x3000 one)")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="the share of noise in the drawn photo (0.1: about 4 levels; "
                             "more noise, larger files and slower decoding)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every format (7)")
    args = parser.parse_args(argv)
    picture = photo(args.photo, args.noise)
    files = encoded(picture)
    rows = decoders(files)
    for data, decode in rows.values():  # the decoding process starts, the code is warm
        decode(data)
    times = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, (data, decode) in rows.items():
            times[name].append(timed(decode, data) * 1000)
    jpeg = statistics.median(times["JPEG"])
    print(f"A {picture.width}x{picture.height} photo decoded to {SHAPE[0]}x{SHAPE[1]}x"
          f"{SHAPE[2]}; ms, median and range of {args.rounds} rounds\n")
    print("| format | bytes | ms | range | against JPEG |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (data, _) in rows.items():
        median = statistics.median(times[name])
        print(f"| {name} | {len(data):,} | {median:.1f} | {min(times[name]):.1f}–"
              f"{max(times[name]):.1f} | {median / jpeg:.1f}× |")
    start, rss, peak = child_costs(files)
    seconds, imported = map(float, subprocess.run(
        [sys.executable, "-c", IMPORT_COST], check=True, capture_output=True,
        text=True).stdout.split())
    print(f"\ndecoding process: starts in {start * 1000:.0f} ms; {rss:.0f} MiB resident after "
          f"both formats, {peak:.0f} MiB at its peak")
    print(f"import pi_heif: {seconds * 1000:.0f} ms, {imported / 2**20:.1f} MiB resident "
          "(after numpy and Pillow)")


if __name__ == "__main__":
    main()
