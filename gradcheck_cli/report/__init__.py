"""Reports: terminal (Rich), JSON and JUnit renderings of plain result data."""
