"""Peak memory of reading Cityscapes-size images one by one through `data.cityscapes.CityscapesDataset`.

Writes N synthetic 2048x1024 images (leftImg8bit PNG + gtFine labelIds PNG) into a temp dir in a child
process, then, in a process that has written nothing, reads and remaps them with `iter_samples` (a
generator: one image alive at a time) and reports the peak RSS (resource.getrusage) before and after.
Not part of the test suite.

    .venv/bin/python bench/large_images.py --num 20
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WIDTH, HEIGHT = 2048, 1024


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_tree(root, num):
    """N Cityscapes-layout pairs in train/bench/: smooth RGB images, labelIds masks of blocks of ids 0..33."""
    import numpy as np
    from PIL import Image

    image_dir = os.path.join(root, "leftImg8bit", "train", "bench")
    mask_dir = os.path.join(root, "gtFine", "train", "bench")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for k in range(num):
        rng = np.random.default_rng(k)
        image = np.stack(
            [(xx * 255 // WIDTH + 40 * k) % 256, (yy * 255 // HEIGHT) % 256, ((xx + yy) // 16 + k) % 256], axis=-1
        ).astype(np.uint8)
        image = np.clip(image + rng.integers(0, 8, image.shape), 0, 255).astype(np.uint8)
        blocks = rng.integers(0, 34, size=(HEIGHT // 64, WIDTH // 64)).astype(np.uint8)
        mask = np.kron(blocks, np.ones((64, 64), np.uint8))
        image_id = f"bench_{k:06d}_000019"
        Image.fromarray(image).save(os.path.join(image_dir, f"{image_id}_leftImg8bit.png"), compress_level=1)
        Image.fromarray(mask, mode="L").save(os.path.join(mask_dir, f"{image_id}_gtFine_labelIds.png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=20, help="images to write and read (default 20)")
    parser.add_argument("--write-only", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_only:
        write_tree(args.write_only, args.num)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_large_") as root:
        start = time.time()
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--num", str(args.num), "--write-only", root], check=True
        )
        print(f"wrote {args.num} Cityscapes-layout {WIDTH}x{HEIGHT} pairs in {time.time() - start:.1f} s")
        import numpy as np

        from data.cityscapes import CityscapesDataset

        dataset = CityscapesDataset(root)
        before = _peak_mib()
        start, count, pixels = time.time(), 0, np.zeros(256, np.int64)
        for ref, image, mask in dataset.iter_samples("train"):
            assert image.shape == (HEIGHT, WIDTH, 3) and mask.shape == (HEIGHT, WIDTH)
            pixels += np.bincount(mask.ravel(), minlength=256)
            count += 1
            del image, mask
        after = _peak_mib()
        per_pair = (WIDTH * HEIGHT * 4) / 2**20
        print(
            f"read+remapped {count} pairs in {time.time() - start:.1f} s; peak RSS {before:.0f} MiB after imports, "
            f"{after:.0f} MiB after reading (+{after - before:.0f} MiB; one decoded pair = {per_pair:.0f} MiB, "
            f"all {count} = {per_pair * count:.0f} MiB); ignore share {pixels[255] / pixels.sum():.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
