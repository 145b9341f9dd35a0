"""sparkdocs: ask questions of whole documents on a local GPU box, no retrieval.

Import what you need from the submodules (`sparkdocs.ingest`, `sparkdocs.prompts`, …); this
package module stays empty so that importing one part does not import them all."""

__version__ = "0.1.0"
