"""`deeplab synth`: write a synthetic VOCdevkit dataset (see data/synthetic.py)."""
import os


def add_arguments(command, parser):
    parser.add_argument("--output", required=True, help="folder to write; the dataset lands in OUTPUT/VOC2012")
    parser.add_argument("--num-train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--num-val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> byte-identical files")
    parser.add_argument("--min-size", type=int, default=160, help="smallest image side in px (default 160)")
    parser.add_argument("--max-size", type=int, default=320, help="largest image side in px (default 320)")
    parser.add_argument("--sbd", action="store_true",
                        help="also write a synthetic SBD tree (OUTPUT/sbd/dataset) sharing half of the VOC ids")


def main(command, args):
    from data.synthetic import generate_sbd_dataset, generate_voc_dataset

    root = generate_voc_dataset(args.output, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                min_size=args.min_size, max_size=args.max_size, progress=True)
    print(f"wrote {args.num_train} train + {args.num_val} val images to {root} (VOCdevkit layout; "
          f"use --voc-root {root})")
    if args.sbd:
        # SBD ids start halfway through the VOC train ids so that overlap handling is exercised.
        sbd_root = generate_sbd_dataset(os.path.join(args.output, "sbd"), num_train=args.num_train,
                                        num_val=args.num_val, seed=args.seed, min_size=args.min_size,
                                        max_size=args.max_size, first_index=args.num_train // 2 + 1,
                                        progress=True)
        print(f"wrote {args.num_train} train + {args.num_val} val SBD images to {sbd_root} "
              f"(use --sbd-root {sbd_root})")
    return 0
