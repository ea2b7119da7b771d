"""Layer 1: the convolution's static description (``ConvGeometry``), its size arithmetic, and the validators every gate shares."""
