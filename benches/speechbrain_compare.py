#!/usr/bin/env python3
"""Times SpeechBrain's ECAPA-TDNN single-threaded on 3 s of 16 kHz audio with the full
1024-channel configuration, the reference for `cargo bench -p inside-benches --bench speech`.

Usage (venv from scripts/make_ecapa_fixture.py's docstring):
  /var/tmp/sbvenv/bin/python benches/speechbrain_compare.py [--model-dir /var/tmp/ecapa_full]

Prints the median of fbank+norm+embedding ("embed_3s", what SpeakerModel::embed does), of the
network alone ("network_only_3s") and of the fbank alone, in ms.
"""

import argparse
import os
import statistics
import time

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

from hyperpyyaml import load_hyperpyyaml  # noqa: E402


def timeit(fn, reps):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="/var/tmp/ecapa_full")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    yaml_path = os.path.join(args.model_dir, "hyperparams.yaml")
    if os.path.exists(yaml_path):
        hp = load_hyperpyyaml(open(yaml_path).read())
        ckpt = os.path.join(args.model_dir, "embedding_model.ckpt")
        hp["embedding_model"].load_state_dict(torch.load(ckpt, map_location="cpu"))
    else:  # same architecture, random weights: the timing does not depend on the values
        hp = load_hyperpyyaml(
            "n_mels: 80\n"
            "compute_features: !new:speechbrain.lobes.features.Fbank\n    n_mels: 80\n"
            "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\n"
            "    norm_type: sentence\n    std_norm: False\n"
            "embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN\n"
            "    input_size: 80\n    channels: [1024, 1024, 1024, 1024, 3072]\n"
            "    kernel_sizes: [5, 3, 3, 3, 1]\n    dilations: [1, 2, 3, 4, 1]\n"
            "    attention_channels: 128\n    lin_neurons: 192\n"
        )
    fbank, norm, model = hp["compute_features"], hp["mean_var_norm"], hp["embedding_model"]
    model.eval()
    norm.eval()
    wav = 0.1 * torch.randn(1, 48000, generator=torch.Generator().manual_seed(0))
    lens = torch.ones(1)
    feats = norm(fbank(wav), lens)

    def embed():
        model(norm(fbank(wav), lens), lens)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"fbank_3s        {timeit(lambda: fbank(wav), args.reps):8.3f} ms")
    print(f"network_only_3s {timeit(lambda: model(feats, lens), args.reps):8.2f} ms")
    print(f"embed_3s        {timeit(embed, args.reps):8.2f} ms")


if __name__ == "__main__":
    main()
