"""course_lib: the helper library of the post-training track (SFT, reward model, PPO, DPO, evaluation, ethics)."""
from .env import quiet_library_noise

quiet_library_noise()
