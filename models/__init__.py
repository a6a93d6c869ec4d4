"""Everything a checkpoint defines: pure computation, no file or network I/O."""
