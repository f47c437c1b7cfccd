"""The paper's zero-shot evaluations (LaVie §4.3, "Quantitative evaluation") on any checkpoint.

- `lavie.eval.prompts`: the prompt sets (UCF-101 class names, MSR-VTT test captions, plain lists).
- `lavie.eval.generate`: samples a prompt set into mp4s and a prompt -> file manifest, sharded
  with accelerate and resumable.
- `lavie.eval.preprocess`: the FVD frame preprocessing (centre crop 270/320 of the short side,
  resize to 224x224, values in [-1, 1]).
- `lavie.eval.frechet`: feature statistics, the Fréchet distance and the Inception Score.
- `lavie.eval.fvd`: FVD with a TorchScript I3D, IS with a TorchScript UCF-101 classifier.
- `lavie.eval.clipsim`: CLIPSIM, the mean CLIP ViT-B/32 text-frame cosine similarity.
- `lavie.eval.report`: JSON reports and the side-by-side table. CLI: `lavie-eval` (`lavie.eval.cli`).

Nothing is imported here, so `lavie-eval --help` starts without torch.
"""
