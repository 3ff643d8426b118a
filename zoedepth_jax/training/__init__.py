"""Fine-tuning: `config` (`TrainConfig`, the original recipe), `losses` (SILog, the router's cross-entropy),
`optimizer` (AdamW with the original's parameter groups and one-cycle schedule), `step` (the train state and the
jitted step) and `checkpoint` (train-state files)."""
