"""The benchmarks of single steps run on a folder of JPEGs and print their tables."""

from benchmarks import jpeg_decoding, multipart_parsing
from tests.support import make_image_folder


def table_rows(output):
    """The data rows of the markdown table the benchmark printed, split into cells."""
    lines = [line for line in output.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_jpeg_decoding_times_both_paths_and_finds_the_pixels_the_same(tmp_path, capsys):
    make_image_folder(tmp_path, per_class=4, size=32)  # half of them JPEGs, at 32x32
    jpeg_decoding.main(["--images", str(tmp_path), "--repeat", "1"])
    [row] = table_rows(capsys.readouterr().out)
    service, pillow, _, direct, differ = row
    assert float(service) > 0 and float(pillow) > 0
    assert direct == "6 of 6" and differ == "0"


def test_multipart_parsing_times_both_parsers_for_both_kinds_of_boundary(tmp_path, capsys):
    make_image_folder(tmp_path, per_class=2)
    multipart_parsing.main(["--images", str(tmp_path), "--repeat", "1"])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["the wrk script's boundary", "a new boundary per form"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
