import os

# Offscreen rendering on a machine without a display (see DESIGN.md: glfw fails headless).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
