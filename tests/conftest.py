import jax

# Parity tests compare fp32 numerics: never let a backend lower matmul precision (TF32 on GPUs).
jax.config.update("jax_default_matmul_precision", "highest")
