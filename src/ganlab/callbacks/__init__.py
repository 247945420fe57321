"""Lightning callbacks: what a person looks at (grids, GIF, plots) and what a checkpoint carries."""
