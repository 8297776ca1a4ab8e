"""`realcompo ui`: the browser app (Gradio). Needs the `ui` extra: pip install 'realcompo-sdk[ui]'."""
