"""What reading a multipart upload costs: the service's parser against Flask's request.files.

Run from the repository root, e.g.:
    python -m benchmarks.multipart_parsing --archive ../shared/datasets/cifar10-train.tar.gz
Each sample JPEG becomes a one-part form, as curl -F sends it, and each form is read in turn
by service/http/uploads.py (the `multipart` package) and by werkzeug's form parser behind Flask's
`request.files` (what the service used before), with the boundary of the benchmark's wrk
script on every form, then with a new boundary per form, as curl, requests and browsers
send. It prints the best of --repeat passes, in µs per form, on one thread.
"""

import io
import uuid

from werkzeug.wrappers import Request

from benchmarks.sample import image_parser, load_sample
from benchmarks.timing import microseconds_per_item
from service.http.uploads import read_uploads

WRK_BOUNDARY = "benchmark-boundary-7d1f0c"  # benchmarks/post_images.lua


def one_part_form(boundary, filename, data):
    """The body curl -F file=@NAME sends for one image."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n")
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


def as_request(boundary, body):
    """A werkzeug Request for a POST of `body`, as Flask hands it to a route."""
    return Request({"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body),
                    "CONTENT_TYPE": f"multipart/form-data; boundary={boundary}",
                    "CONTENT_LENGTH": str(len(body))})


def with_multipart_package(request):
    """The service's way: service/http/uploads.py."""
    return read_uploads(request, max_images=32)


def with_request_files(request):
    """werkzeug's form parser, through Request.files."""
    return [(part.filename, part.read()) for _, part in request.files.items(multi=True)]


def as_requests(forms):
    """A fresh request for each (boundary, body)."""
    return [as_request(boundary, body) for boundary, body in forms]


def main(argv=None):
    parser = image_parser("python -m benchmarks.multipart_parsing", __doc__)
    parser.add_argument("--repeat", type=int, default=5, help="passes over the forms (5)")
    args = parser.parse_args(argv)
    images = load_sample(args)
    kinds = {"the wrk script's boundary": lambda: WRK_BOUNDARY,
             "a new boundary per form": lambda: uuid.uuid4().hex}
    print(f"{len(images)} one-part forms of {sum(len(data) for _, data in images) // len(images):,}"
          " bytes on average; µs per form, best of", args.repeat, "passes\n")
    print("| boundary | multipart (the service) | werkzeug (request.files) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for kind, boundary in kinds.items():
        boundaries = [boundary() for _ in images]
        forms = [(name, one_part_form(name, filename, data))
                 for name, (filename, data) in zip(boundaries, images, strict=True)]
        ours = microseconds_per_item(with_multipart_package, forms, args.repeat, as_requests)
        theirs = microseconds_per_item(with_request_files, forms, args.repeat, as_requests)
        print(f"| {kind} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.1f}× |")


if __name__ == "__main__":
    main()
