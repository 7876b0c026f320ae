"""Class-imbalance weights: pure formulas (formulas), per-pixel maps (maps, border, cache), and the named
strategies a run chooses from (registry; the built-ins in strategies/, one module each)."""
