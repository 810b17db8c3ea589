"""What every other part builds on, importing nothing of the toolkit above it: the user-error type,
progress reporting, atomic writes, box geometry, background loading and plotting."""
