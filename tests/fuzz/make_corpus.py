"""Write the seed corpora of tests/fuzz/corpus/: python -m tests.fuzz.make_corpus.

Small valid inputs that reach each parser's branches (every accepted image format with its
EXIF, palette, transparency and 16-bit paths; every body form /predict reads; metadata.json
shapes), from which the fuzzer mutates. The output is the same on every run.
"""

import base64
import io
import json
import shutil

import numpy as np
from PIL import Image

from tests import photo_files
from tests.fuzz.runner import CORPUS_DIR, REGRESSIONS_DIR

ORIENTATION = 0x0112


def picture(mode, size=(8, 6)):
    """A small gradient in `mode`, different in each corner so a rotation shows."""
    height, width = size[1], size[0]
    ramp = np.add.outer(np.arange(height) * 40, np.arange(width) * 25).astype(np.uint16)
    rgb = Image.fromarray(np.stack([ramp % 256, (ramp * 3) % 256, 255 - ramp % 256], -1)
                          .astype(np.uint8), "RGB")
    if mode in ("I;16", "I"):
        return Image.fromarray(ramp.astype(np.uint16) * 250).convert(mode)
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32) / 3)
    if mode == "P":
        return rgb.quantize(8)
    image = rgb.convert(mode)
    if mode.endswith("A"):
        image.putalpha(Image.fromarray((ramp * 5 % 256).astype(np.uint8), "L"))
    return image


def save(image, image_format, **options):
    """The bytes of `image` saved in `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def rotated_exif():
    """EXIF that says: turn the picture 90 degrees to show it."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return exif


def premultiplied_alpha(tiff):
    """A little-endian grey+alpha TIFF whose ExtraSamples tag says the alpha is premultiplied."""
    unassociated = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"
    assert tiff.count(unassociated) == 1
    return tiff.replace(unassociated, unassociated[:-2] + b"\x01\x00")


def image_seeds():
    """{file name: bytes} of small images in every accepted format."""
    transparent_p = picture("P")
    frames = [picture("P"), picture("RGB").rotate(90).quantize(8)]
    return {
        "rgb.jpg": save(picture("RGB"), "JPEG", quality=80),
        # At the target's model size: decoded without Pillow (service/runtime/images.py).
        "model-size.jpg": save(picture("RGB", (32, 32)), "JPEG", quality=90),
        "model-size-grey.jpg": save(picture("L", (32, 32)), "JPEG", quality=90),
        "grey.jpg": save(picture("L"), "JPEG"),
        "cmyk.jpg": save(picture("CMYK"), "JPEG"),
        "progressive.jpg": save(picture("RGB", (24, 16)), "JPEG", progressive=True),
        "exif-rotated.jpg": save(picture("RGB"), "JPEG", exif=rotated_exif()),
        "rgb.png": save(picture("RGB"), "PNG"),
        "rgba.png": save(picture("RGBA"), "PNG"),
        "la.png": save(picture("LA"), "PNG"),
        "palette-transparent.png": save(transparent_p, "PNG", transparency=0),
        "grey-transparent.png": save(picture("L"), "PNG", transparency=40),
        "rgb-transparent.png": save(picture("RGB"), "PNG", transparency=(0, 0, 255)),
        "grey16.png": save(picture("I;16"), "PNG"),
        "bilevel.png": save(picture("1"), "PNG"),
        "exif-rotated.png": save(picture("RGB"), "PNG", exif=rotated_exif()),
        "palette.gif": save(picture("P"), "GIF"),
        "transparent.gif": save(transparent_p, "GIF", transparency=0),
        "animated.gif": save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rgb.bmp": save(picture("RGB"), "BMP"),
        "rgba.bmp": save(picture("RGBA"), "BMP"),
        "palette.bmp": save(picture("P"), "BMP"),
        "bilevel.bmp": save(picture("1"), "BMP"),
        "lossy.webp": save(picture("RGB"), "WEBP", quality=50),
        "lossless-rgba.webp": save(picture("RGBA"), "WEBP", lossless=True),
        "exif-rotated.webp": save(picture("RGB"), "WEBP", exif=rotated_exif()),
        "animated.webp": save(picture("RGB"), "WEBP", save_all=True,
                              append_images=[picture("RGB").rotate(90)]),
        "rgb.tif": save(picture("RGB"), "TIFF"),
        "rgb-lzw.tif": save(picture("RGB"), "TIFF", compression="tiff_lzw"),
        "rgb-deflate.tif": save(picture("RGB"), "TIFF", compression="tiff_adobe_deflate"),
        "ycbcr-jpeg.tif": save(picture("RGB", (16, 16)), "TIFF", compression="jpeg"),
        "rgba-packbits.tif": save(picture("RGBA"), "TIFF", compression="packbits"),
        "grey16.tif": save(picture("I;16"), "TIFF"),
        "int32.tif": save(picture("I"), "TIFF"),
        "float.tif": save(picture("F"), "TIFF"),
        "cmyk.tif": save(picture("CMYK"), "TIFF"),
        "palette.tif": save(picture("P"), "TIFF"),
        "la.tif": save(picture("LA"), "TIFF"),
        "lab.tif": save(Image.frombytes("LAB", (8, 6), picture("RGB").tobytes()), "TIFF"),
        "premultiplied-la.tif": premultiplied_alpha(save(picture("LA"), "TIFF")),
        "bilevel-g4.tif": save(picture("1"), "TIFF", compression="group4"),
        "exif-rotated.tif": save(picture("RGB"), "TIFF", tiffinfo={ORIENTATION: 6}),
        "two-pages.tif": save(picture("RGB"), "TIFF", save_all=True,
                              append_images=[picture("L")]),
        **photo_seeds(),
    }


def photo_seeds():
    """{file name: bytes} of AVIF and HEIF files, as phones and browsers write them."""
    return {
        "photo.avif": photo_files.avif(picture("RGB", (16, 12))),
        "rgba.avif": photo_files.avif(picture("RGBA", (16, 12))),
        "grey.avif": photo_files.avif(picture("L", (16, 12))),
        "turned.avif": photo_files.turned_both_ways(photo_files.avif, picture("RGB", (16, 12))),
        "photo.heic": photo_files.heif(picture("RGB", (16, 12))),
        "rgba.heic": photo_files.heif(picture("RGBA", (16, 12))),
        "turned.heic": photo_files.turned_both_ways(photo_files.heif, picture("RGB", (16, 12))),
        "primary-second.heic": photo_files.heif([picture("RGB"), picture("RGB").rotate(90)],
                                                primary_index=1),
        "ten-bit.heic": photo_files.high_bit_depth_heif(picture("RGB", (16, 12)), 10),
    }


def with_spatial_extents(data, width, height):
    """`data` with the first image size it declares (its ispe box) replaced."""
    start = data.index(b"ispe") + 8
    return data[:start] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[start + 8:]


def with_brands(data, brand):
    """`data` with every brand of its ftyp box (major and compatible) replaced by `brand`."""
    size = int.from_bytes(data[:4], "big")
    return data[:8] + brand + data[12:16] + brand * ((size - 16) // 4) + data[size:]


def flipped(data, box, count=8):
    """`data` with `count` bytes inverted just after the start of its first `box`."""
    start = data.index(box) + 4
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + count]) + data[start + count:]


def malformed_photos():
    """{file name: bytes} of broken AVIF and HEIF files, each one a 4xx: the regressions of
    the C decoders that atheris does not instrument (tests/fuzz/regressions/decode_image)."""
    seeds = photo_seeds()
    avif, heic = seeds["photo.avif"], seeds["photo.heic"]
    broken = {}
    for name, data in (("avif", avif), ("heic", heic)):
        broken.update({
            f"cut-in-the-ftyp.{name}": data[:20],
            f"cut-in-the-meta.{name}": data[:120],
            f"cut-in-half.{name}": data[:len(data) // 2],
            f"last-bytes-cut.{name}": data[:-8],
            f"declares-70000x70000.{name}": with_spatial_extents(data, 70000, 70000),
            f"flipped-iloc.{name}": flipped(data, b"iloc"),
            f"flipped-ftyp-size.{name}": b"\xff\xff\xff\xff" + data[4:],
            f"mp4-brands.{name}": with_brands(data, b"isom"),
        })
    broken["declares-another-size.heic"] = with_spatial_extents(heic, 64, 48)
    broken["heic-brand-on-av1.avif"] = with_brands(avif, b"heic")
    broken["uncompressed-item.heic"] = heic.replace(b"hvc1", b"unci")
    return broken


def multipart(parts, boundary="fuzzbound"):
    """A multipart/form-data body of (field name, file name or None, bytes) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 + ("Content-Type: image/png\r\n" if filename else "") + "\r\n").encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}".encode(), body


def upload_seeds():
    """{file name: Content-Type line + body} of every form a /predict body takes."""
    png, gif = save(picture("RGB"), "PNG"), save(picture("P"), "GIF")
    text = base64.b64encode(png).decode()
    wrapped = "\n".join(text[i:i + 60] for i in range(0, len(text), 60))
    form_type, one_file = multipart([("file", "a.png", png)])
    bodies = {
        "multipart-one.txt": (form_type, one_file),
        "multipart-two.txt": multipart([("file", "a.png", png), ("note", None, b"hello"),
                                        ("file", "b.gif", gif)]),
        "multipart-no-file.txt": multipart([("note", None, b"only text")]),
        # Forms the parser refuses: cut short before the closing boundary, and bare LF lines.
        "multipart-cut-short.txt": (form_type, one_file[:-30]),
        "multipart-lf-lines.txt": (form_type, one_file.replace(b"\r\n", b"\n")),
        "raw-png.txt": (b"image/png", png),
        "raw-octets.txt": (b"application/octet-stream", gif),
        "json-base64.txt": (b"application/json", json.dumps({"images": [text]}).encode()),
        "json-data-url.txt": (b"application/json; charset=utf-8", json.dumps(
            {"images": [f"data:image/png;base64,{text}", "data:,AAAA"]}).encode()),
        "json-wrapped.txt": (b"application/json", json.dumps({"images": [wrapped]}).encode()),
        "json-not-base64.txt": (b"application/json", b'{"images": ["not base64!", 3]}'),
        "json-list.txt": (b"application/json", b'[{"images": []}, null, 1.5e3, "\\u00e9"]'),
        "form-urlencoded.txt": (b"application/x-www-form-urlencoded", b"file=a.png&x=%20"),
    }
    return {name: header + b"\n" + body for name, (header, body) in bodies.items()}


def metadata_seeds():
    """{file name: metadata.json} shapes, from valid to broken, for the model poller."""
    valid = {"name": "shapes", "version": 1, "classes": ["red", "green", "blue"],
             "input": {"height": 16, "width": 16, "channels": 3},
             "metrics": {"test_accuracy": 0.9}, "created_at": "2026-01-01T00:00:00Z"}
    return {
        "valid.json": json.dumps(valid, indent=2).encode(),
        "no-input.json": json.dumps({**valid, "input": None}).encode(),
        "string-sizes.json": json.dumps({**valid, "input": {"height": "16", "width": 1e3,
                                                            "channels": [3]}}).encode(),
        "float-sizes.json": (b'{"name": "s", "classes": ["a", "b"], '
                             b'"input": {"height": 1.6e1, "width": 16.0, "channels": 3E0}}'),
        "classes-object.json": json.dumps({**valid, "classes": {"a": 1}}).encode(),
        "a-list.json": b'[1, "two", {"three": null}]',
        "latin-1.json": '{"name": "caf\u00e9"}'.encode("latin-1"),
        "empty.json": b"",
    }


def infer_request_seeds():
    """{file name: header length, newline, body}: /v2 infer requests, JSON and binary."""
    png = save(picture("RGB"), "PNG")
    image = {"name": "image", "shape": [1], "datatype": "BYTES"}
    outputs = [{"name": "probabilities", "parameters": {"classification": 2}}]

    def binary(header, *chunks):
        text = json.dumps(header).encode()
        return str(len(text)).encode() + b"\n" + text + b"".join(chunks)

    return {
        "json-bytes.txt": b"\n" + json.dumps({"id": "seed", "inputs": [
            {**image, "data": [base64.b64encode(png).decode()]}]}).encode(),
        "json-pixels-classify.txt": b"\n" + json.dumps({"inputs": [
            {"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "UINT8",
             "data": list(range(12))}], "outputs": outputs}).encode(),
        "binary-bytes.txt": binary(
            {"inputs": [{**image, "parameters": {"binary_data_size": len(png) + 4}}],
             "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]},
            len(png).to_bytes(4, "little"), png),
        "binary-pixels.txt": binary(
            {"inputs": [{"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "UINT8",
                         "parameters": {"binary_data_size": 12}}]}, bytes(range(12))),
    }


def grpc_infer_request_seeds():
    """{file name: 0, then a serialized ModelInferRequest}: what Triton's gRPC client sends
    (raw contents), typed contents, and the classification extension; and one byte 1 for
    the built messages (tests/fuzz/targets/grpc_infer_request.py)."""
    from service.grpc.messages import inference

    png = save(picture("RGB"), "PNG")
    raw = inference.ModelInferRequest(model_name="colours", id="seed",
                                      raw_input_contents=[len(png).to_bytes(4, "little") + png])
    raw.inputs.add(name="image", datatype="BYTES", shape=[1])
    typed = inference.ModelInferRequest(model_name="colours")
    typed.inputs.add(name="pixels", datatype="UINT8",
                     shape=[1, 2, 2, 3]).contents.uint_contents.extend(range(12))
    typed.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    typed.parameters["binary_data_output"].bool_param = True
    return {"raw-bytes.bin": b"\0" + raw.SerializeToString(),
            "typed-pixels-classify.bin": b"\0" + typed.SerializeToString(),
            "built.bin": b"\1" + bytes(range(64))}


def policy_seeds():
    """serving.json files: the shapes the release command writes, and a few it refuses."""
    def encoded(document):
        return json.dumps(document, indent=2).encode()

    return {
        "empty.json": b"{}",
        "stable.json": encoded({"version_labels": {"stable": 2}}),
        "canary-split.json": encoded({"model_version_policy": {"latest": {"num_versions": 2}},
                                      "version_labels": {"stable": 2, "canary": 3},
                                      "canary": {"percent": 10, "mode": "split"}}),
        "canary-shadow.json": encoded({"model_version_policy": {"all": {}},
                                       "version_labels": {"stable": 1, "canary": 3},
                                       "canary": {"percent": 12.5, "mode": "shadow"}}),
        "specific-history.json": encoded({
            "model_version_policy": {"specific": {"versions": [1, 3]}},
            "version_labels": {"stable": 3},
            "history": [{"stable": 1, "until": "2026-12-01T00:00:00+00:00", "by": "promote"}]}),
        "missing-version.json": encoded({"version_labels": {"stable": 9}}),
        "percent-too-high.json": encoded({"version_labels": {"canary": 2},
                                          "canary": {"percent": 150}}),
    }


def feedback_seeds():
    """POST /feedback bodies: one item, a list, repeats and conflicts of the stored prediction
    ("ID" stands for its id), an unknown id, a class of no model."""
    def encoded(document):
        return json.dumps(document).encode()

    return {
        "one.json": encoded({"prediction_id": "ID", "class": "red"}),
        "list.json": encoded([{"prediction_id": "ID", "class": "red"},
                              {"prediction_id": "ID", "class": "red"}]),
        "conflict.json": encoded([{"prediction_id": "ID", "class": "red"},
                                  {"prediction_id": "ID", "class": "blue"}]),
        "unknown-id.json": encoded({"prediction_id": "Zm9vYmFy", "class": "red"}),
        "unknown-class.json": encoded({"prediction_id": "ID", "class": "cat"}),
    }


def main():
    """Replace every target's seed folder with freshly made seeds."""
    for target, seeds in {"decode_image": image_seeds(), "read_uploads": upload_seeds(),
                          "model_repository": metadata_seeds(),
                          "serving_policy": policy_seeds(),
                          "feedback_body": feedback_seeds(),
                          "infer_request": infer_request_seeds(),
                          "grpc_infer_request": grpc_infer_request_seeds()}.items():
        folder = CORPUS_DIR / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
    # Regressions hold what the fuzzer found too: only these files are written over.
    for name, data in malformed_photos().items():
        (REGRESSIONS_DIR / "decode_image" / name).write_bytes(data)


if __name__ == "__main__":
    main()
