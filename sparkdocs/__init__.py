"""sparkdocs: ask questions of whole documents on a local GPU box, no retrieval."""

from .config import Settings
from .documents import Document, DocumentKind, Section, SectionKind
from .errors import SparkdocsError

__all__ = ["Document", "DocumentKind", "Section", "SectionKind", "Settings", "SparkdocsError"]
__version__ = "0.1.0"
