"""From files to tensors: pairing images with masks and the split (folders), reading and decoding masks
per format (formats), counting them (counts), the dataset, its transforms, the synthetic set, and the
config -> datasets wiring of a run (build)."""
