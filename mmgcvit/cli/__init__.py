"""What ``tools/train.py`` and ``tools/test.py`` share: the upstream tools'
flags, pre-flight checks, the CPU fallbacks and the reversible patches our
tools apply around a run (see the README's table of what they add)."""
