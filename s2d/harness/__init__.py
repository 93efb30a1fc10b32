"""The harness that tests, benchmarks, deploy and tools share: a real service process (`server`), the local scaled-out
stack (`stack`), real-face scenes and the standard clip (`scenes`), video encoding (`video`), live-stream load
(`streams`) and benchmark measurement (`measure`). Installed with the package so none of them reaches for a folder
that is not; it runs from a source checkout (`REPO`), as the tests and benchmarks do."""
