"""Fine-tuning: `config` (`TrainConfig`, the original recipe), `data` (Grain pipelines of image and depth pairs
with the original augmentations), `losses` (SILog, the router's cross-entropy), `optimizer` (AdamW with the
original's parameter groups and one-cycle schedule), `step` (the train state and the jitted step), `checkpoint`
(Orbax checkpoints of the train state and the data position), `finetune` (the loop behind `zoedepth-jax
finetune`), `nnx` (the model as a Flax NNX module) and `host_memory` (glibc's malloc set to keep freed memory,
so that each step does not fault its buffers in afresh)."""
