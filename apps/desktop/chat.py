"""A small Tk chat window that embeds edge in-process through `edge.load()`.

Tk is single-threaded: only the UI thread may touch widgets, and a slow
call on it freezes the window. So the model lives on one worker thread that
loads it and streams replies into a queue; the UI thread polls that queue
with `after()` and appends pieces as they arrive. Stop sets an event the
worker checks between pieces.
"""
from __future__ import annotations

import queue
import threading
import tkinter as tk
from dataclasses import dataclass, field
from tkinter import ttk

POLL_MS = 30  # how often the UI thread drains the worker's queue

# Events from the worker thread to the UI thread.
READY, PIECE, DONE, FAILED = "ready", "piece", "done", "failed"


@dataclass
class ChatSettings:
    """What the window loads and how it generates."""

    model: str | None = field(default=None, metadata={"help": "Model name or path (default: SmolLM2-135M-Instruct)."})
    backend: str | None = field(default=None, metadata={"help": "Force a backend (default: chosen for this device)."})
    max_tokens: int = field(default=256, metadata={"help": "Longest reply in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 is greedy."})
    system: str | None = field(default=None, metadata={"help": "System prompt."})
    guard: bool = field(default=True, metadata={"help": "Check each prompt with the prompt guard before the model sees it."})


class ChatWindow:
    """The window: transcript, entry line, Send and Stop; `after` callbacks keep it live."""

    def __init__(self, root: tk.Tk, settings: ChatSettings | None = None, load=None):
        self.root = root
        self.settings = settings or ChatSettings()
        self._load = load  # () -> model; default edge.load with the settings
        self.events: queue.Queue = queue.Queue()
        self.requests: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.history: list[dict] = []
        self.reply: list[str] = []
        self.model_label = ""
        self.busy = True
        self.updates = 0  # reply pieces drawn; more than one means the reply streamed in
        self.ticks = 0  # poll callbacks run; they keep running while the model works
        self.listeners: list = []  # callables(event, value) for embedding apps and tests
        self._build()
        self._worker = threading.Thread(target=self._work, name="edge-chat-model", daemon=True)
        self._worker.start()
        self.root.after(POLL_MS, self._poll)

    # -- UI thread ---------------------------------------------------------------
    def _build(self) -> None:
        self.root.title("edge chat")
        self.root.geometry("640x420")
        frame = ttk.Frame(self.root, padding=8)
        frame.pack(fill="both", expand=True)
        self.text = tk.Text(frame, wrap="word", state="disabled", height=18, font=("DejaVu Sans", 11))
        self.text.tag_configure("user", foreground="#1a4f8b", font=("DejaVu Sans", 11, "bold"))
        self.text.tag_configure("assistant", foreground="#222222")
        self.text.tag_configure("note", foreground="#888888")
        self.text.pack(fill="both", expand=True)
        bar = ttk.Frame(frame)
        bar.pack(fill="x", pady=(6, 0))
        self.entry = ttk.Entry(bar)
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", lambda e: self.send())
        self.send_button = ttk.Button(bar, text="Send", command=self.send, state="disabled")
        self.send_button.pack(side="left", padx=(6, 0))
        self.stop_button = ttk.Button(bar, text="Stop", command=self.stop.set, state="disabled")
        self.stop_button.pack(side="left", padx=(6, 0))
        self.status = tk.StringVar(value="Loading model...")
        ttk.Label(frame, textvariable=self.status, foreground="#666666").pack(fill="x", pady=(4, 0))

    def _append(self, text: str, tag: str) -> None:
        self.text.configure(state="normal")
        self.text.insert("end", text, tag)
        self.text.configure(state="disabled")
        self.text.see("end")

    def send(self, prompt: str | None = None) -> bool:
        """Send the entry's text (or `prompt`); False while busy or when there is nothing to send."""
        prompt = (prompt if prompt is not None else self.entry.get()).strip()
        if self.busy or not prompt:
            return False
        self.entry.delete(0, "end")
        self.busy = True
        self.stop.clear()
        self.reply = []
        self.history.append({"role": "user", "content": prompt})
        self._append(f"You: {prompt}\n", "user")
        self._append("Assistant: ", "assistant")
        self.send_button.configure(state="disabled")
        self.stop_button.configure(state="normal")
        self.status.set("Generating...")
        self.requests.put(list(self.history))
        return True

    def _poll(self) -> None:
        self.ticks += 1
        try:
            while True:
                kind, value = self.events.get_nowait()
                self._handle(kind, value)
        except queue.Empty:
            pass
        self.root.after(POLL_MS, self._poll)

    def _handle(self, kind: str, value) -> None:
        if kind == PIECE:
            self.reply.append(value)
            self.updates += 1
            self._append(value, "assistant")
        elif kind == READY:
            self.model_label = value
            self.status.set(f"Ready: {value}")
            self._idle()
        elif kind == DONE:
            self.history.append({"role": "assistant", "content": "".join(self.reply)})
            self._append("\n\n", "assistant")
            self.status.set(value)
            self._idle()
        elif kind == FAILED:
            self._append(f"\n[{value}]\n\n", "note")
            self.status.set(f"Error: {value}")
            self._idle()
        for listener in self.listeners:
            listener(kind, value)

    def _idle(self) -> None:
        self.busy = False
        self.send_button.configure(state="normal")
        self.stop_button.configure(state="disabled")
        self.entry.focus_set()

    # -- worker thread: the only user of the model -----------------------------------
    def _work(self) -> None:
        s = self.settings
        try:
            if self._load is not None:
                model = self._load()
            else:
                import edge

                model = edge.load(s.model, s.backend, guard=s.guard)
        except Exception as exc:  # shown in the window; the UI stays usable
            self.events.put((FAILED, f"cannot load the model: {exc}"))
            return
        self.events.put((READY, f"{model.name} on {model.backend_name}"))
        while True:
            messages = self.requests.get()
            if messages is None:
                return
            try:
                for piece in model.stream_chat(messages, system=s.system, max_tokens=s.max_tokens,
                                               temperature=s.temperature):
                    if self.stop.is_set():
                        break
                    self.events.put((PIECE, piece))
                st = model.stats
                note = "stopped" if self.stop.is_set() else f"{st.completion_tokens} tokens, {st.decode_tok_s:.1f} tok/s"
                self.events.put((DONE, note))
            except Exception as exc:
                self.events.put((FAILED, str(exc)))

    def close(self) -> None:
        self.stop.set()
        self.requests.put(None)
        self.root.destroy()


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m edge.apps.desktop", description="A desktop chat window on edge.")
    for f in ChatSettings.__dataclass_fields__.values():
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
            continue
        kind = type(f.default) if f.default is not None else str
        p.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    a = p.parse_args(argv)
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"Cannot open a window ({exc}). Run it on a desktop session or set DISPLAY.")
        return 1
    win = ChatWindow(root, ChatSettings(**vars(a)))
    root.protocol("WM_DELETE_WINDOW", win.close)
    root.mainloop()
    return 0
