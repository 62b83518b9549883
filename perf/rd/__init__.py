"""R-D evaluation: encode source / pre-edited / pre-filtered frames at a ladder, score with libvmaf, BD-rate."""
