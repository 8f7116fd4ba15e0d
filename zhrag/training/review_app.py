"""The review page: a thin gradio layer over :class:`zhrag.training.review.ReviewSession`.

One item at a time (question and answer editable, passage or prompt context, generator status and reason,
review decision), buttons Accept / Reject / Save edit / Prev / Next, and the counts. A decision is on disk
before the page updates and moves on to the next item; opening the page starts at the first undecided item.
Every button is also an API endpoint (``/load``, ``/show``, ``/accept``, ``/reject``, ``/save``, ``/prev``,
``/next``) that ``gradio_client`` can call; each returns the same seven values as
:func:`zhrag.training.review.item_view`.

Needs the optional ``gradio`` package (``pip install 'zhrag[review]'``). The page uses system fonts only, so it
works offline.
"""

from __future__ import annotations

from typing import Any

from zhrag.errors import ConfigError, ZhragError
from zhrag.training.review import ReviewSession, item_view


def _gradio() -> Any:
    try:
        import gradio  # optional dependency: zhrag[review]
    except ImportError:
        raise ConfigError("the review page needs the optional 'gradio' package (pip install 'zhrag[review]')") from None
    return gradio


def build_app(session: ReviewSession) -> Any:
    """The gradio ``Blocks`` page reviewing ``session``'s items."""
    gr = _gradio()

    def show(index: Any) -> tuple:
        return item_view(session, index)

    def decide(action: str, index: Any, question: str, answer: str) -> tuple:
        try:
            session.decide(index, action, question, answer)
        except ZhragError as error:
            raise gr.Error(str(error)) from None
        return show(session.clamp(index) + 1)

    def load() -> tuple:
        return show(session.first_undecided())

    def accept(index: Any, question: str, answer: str) -> tuple:
        return decide("accept", index, question, answer)

    def save(index: Any, question: str, answer: str) -> tuple:
        return decide("save", index, question, answer)

    def reject(index: Any) -> tuple:
        return decide("reject", index, "", "")

    def previous(index: Any) -> tuple:
        return show(session.clamp(index) - 1)

    def following(index: Any) -> tuple:
        return show(session.clamp(index) + 1)

    with gr.Blocks(title=f"zhrag review: {session.path.name}", analytics_enabled=False) as app:
        gr.Markdown(f"### Review `{session.path}` · decisions: `{session.decisions_path}`")
        index = gr.Number(value=0, precision=0, visible=False, label="index")
        position = gr.Markdown(elem_id="position")
        counts = gr.Markdown(elem_id="counts")
        status = gr.Markdown(elem_id="status")
        question = gr.Textbox(label="Question", lines=2, elem_id="question")
        answer = gr.Textbox(label="Answer", elem_id="answer")
        with gr.Row():
            accept_button = gr.Button("Accept", variant="primary", elem_id="accept")
            reject_button = gr.Button("Reject", variant="stop", elem_id="reject")
            save_button = gr.Button("Save edit", elem_id="save")
            prev_button = gr.Button("Prev", elem_id="prev")
            next_button = gr.Button("Next", elem_id="next")
        context = gr.Textbox(label="Passage / context", lines=10, interactive=False, elem_id="context")
        outputs = [index, position, counts, status, question, answer, context]
        app.load(load, None, outputs, api_name="load")
        index.submit(show, index, outputs, api_name="show")
        accept_button.click(accept, [index, question, answer], outputs, api_name="accept")
        reject_button.click(reject, index, outputs, api_name="reject")
        save_button.click(save, [index, question, answer], outputs, api_name="save")
        prev_button.click(previous, index, outputs, api_name="prev")
        next_button.click(following, index, outputs, api_name="next")
    return app


def theme() -> Any:
    """gradio's default theme with system fonts (the default one fetches web fonts, which fails offline)."""
    gr = _gradio()
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(session: ReviewSession, *, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the review page on ``host:port`` until interrupted.

    Raises:
        ConfigError: gradio missing, or the port cannot be opened.
    """
    app = build_app(session)
    try:
        app.launch(server_name=host, server_port=port, theme=theme(), footer_links=["api"])
    except OSError as error:
        raise ConfigError(f"cannot serve the review page on {host}:{port} ({error})") from None
