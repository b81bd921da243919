"""Live streaming: a source encoded once, fanned out over WebSocket to browsers that decode it in JavaScript."""
