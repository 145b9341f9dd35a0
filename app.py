"""sparkdocs in the browser: `streamlit run app.py`. Routing only (sparkdocs.ui.routing)."""

from sparkdocs.ui.routing import run_app

run_app()
