"""The judges of steered outputs as a library: one rating interface, what a judge run is, which outputs and texts
it rates, the proxy judge and its calibration. The `axw judge*` commands in stages/ only wire these together."""
