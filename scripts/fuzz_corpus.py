"""Seed corpus for the fuzz targets (fuzz/fuzz_targets/*.rs): small valid inputs of every
format vtab-orch reads from third parties, written with the real tools (pickle + numpy as
CIFAR's files were made, Pillow, safetensors, peft's adapter_config.json, tarfile, zipfile).

    python scripts/fuzz_corpus.py OUT    # writes OUT/<target>/<name>

./x fuzz runs it before fuzzing; nothing here is committed (fuzz/regressions/ is).
"""
import io
import json
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def put(out, target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def pickles(out):
    rng = np.random.default_rng(0)
    train = {
        b"filenames": [b"a.png", b"b.png"],
        b"fine_labels": [3, 1],
        b"coarse_labels": [0, 1],
        b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8),
    }
    meta = {b"fine_label_names": [b"apple", b"bee", b"cat", b"dog"]}
    for proto in (0, 2, 4, 5):
        put(out, "pickle", f"train_p{proto}", pickle.dumps(train, protocol=proto))
        put(out, "pickle", f"meta_p{proto}", pickle.dumps(meta, protocol=proto))
    # Python 3 str keys and numpy labels, as some re-saved copies have.
    put(out, "pickle", "str_keys", pickle.dumps({"labels": np.arange(4, dtype=np.int64)}, protocol=2))
    shared = [1, 2]
    put(out, "pickle", "memo", pickle.dumps({b"a": shared, b"b": shared}, protocol=2))


def lists(out):
    put(out, "vtab1k_list", "train800", "images/0.png 0\nimages/1.png 3\nimages/2.png 1\n")
    put(out, "vtab1k_list", "crlf", "images/a b.jpg 2\r\nimages/c.jpg 0\r\n")
    put(out, "csv_list", "header", "path,label\nimg/a.png,cat\nimg/b.png,dog\n")
    put(out, "csv_list", "ints", "img/a.png,0\nimg/b.png,4\n")
    put(out, "csv_list", "quoted", 'file,class\n"img/a,b.png",cat\nimg/c.png , dog ,extra\n')


def images(out):
    from PIL import Image

    img = Image.new("RGB", (7, 5), (10, 200, 30))
    for fmt, name in (("PNG", "rgb.png"), ("JPEG", "rgb.jpg"), ("TIFF", "rgb.tif")):
        b = io.BytesIO()
        img.save(b, fmt)
        put(out, "image", name, b.getvalue())
    for mode, name in (("L", "gray.png"), ("RGBA", "rgba.png"), ("P", "palette.png")):
        b = io.BytesIO()
        img.convert(mode).save(b, "PNG")
        put(out, "image", name, b.getvalue())


def safetensors_files(out):
    from safetensors.numpy import save

    put(out, "safetensors", "two", save({"a": np.zeros((2, 3), np.float32), "b": np.arange(4, dtype=np.int64)}))
    put(out, "safetensors", "meta", save({"w": np.ones((1,), np.float16)}, metadata={"format": "pt"}))
    put(out, "safetensors", "empty", save({}))


def peft_configs(out):
    fixtures = ROOT / "kernels" / "tests" / "fixtures"
    for cfg in sorted(fixtures.glob("*/adapter_config.json")):
        put(out, "peft_config", cfg.parent.name, cfg.read_bytes())


def suites(out):
    for toml in [ROOT / "suite.toml", *sorted((ROOT / "suites").glob("*.toml")),
                 *sorted((ROOT / "tests" / "bad_suites").glob("*.toml"))]:
        put(out, "suite", toml.name, toml.read_bytes())


def slurm(out):
    put(out, "slurm", "sbatch", "4242;cluster\n")
    put(out, "slurm", "squeue", "JobId=12 JobState=RUNNING Reason=None NodeList=n1\n")
    put(out, "slurm", "sacct", "12|COMPLETED|0:0\n12.batch|COMPLETED|0:0\n13|CANCELLED by 0|0:15\n")


def archives(out):
    def tar_bytes(entries):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                else:
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return b.getvalue()

    entries = [("vtab-1k/dtd", None), ("vtab-1k/dtd/train800.txt", b"images/0.png 0\n"),
               ("vtab-1k/dtd/images/0.png", b"\x89PNG\r\n\x1a\n")]
    put(out, "tar", "task", tar_bytes(entries))
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("a/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../x"
        t.addfile(info)
    put(out, "tar", "pax_link", b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            if data is None:
                z.writestr(name + "/", b"")
            else:
                z.writestr(name, data)
    put(out, "zip", "task", b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("stored.txt", b"stored")
    put(out, "zip", "stored", b.getvalue())


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/fuzz-corpus")
    for make in (pickles, lists, images, safetensors_files, peft_configs, suites, slurm, archives):
        make(out)
    print(f"fuzz seeds in {out}: " + ", ".join(
        f"{d.name} {len(os.listdir(d))}" for d in sorted(out.iterdir()) if d.is_dir()))


if __name__ == "__main__":
    main()
