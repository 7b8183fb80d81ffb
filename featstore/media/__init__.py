"""Media decoding: video frames (decord, PyAV fallback), 16 kHz audio, face
crops, and one clip decoded once into every encoder's input (``clip``)."""
