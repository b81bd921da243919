"""The outside world: Pillow images, video files through PyAV, cameras, PNG8/GIF/APNG export."""
