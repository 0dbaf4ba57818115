"""Getting a task's pixels: URL -> local file (download cache, limits, Label Studio auth) -> decoded
image or video frames. Imports only `core`."""
