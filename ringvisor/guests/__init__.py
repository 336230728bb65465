"""Guest software built from the sources under guests/ (see guests/README.md)."""
