"""compress toolchain: everything that imports torch, plus orchestration and the CLI."""
