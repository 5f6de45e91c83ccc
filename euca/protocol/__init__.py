"""Wire formats, sans-I/O: bytes in, typed values out, and back. No sockets, no files."""
