"""The local assistant: safe local tools, speech-to-text and the chat loop.

    from edge.apps.assistant import Assistant
    with Assistant() as a:
        turn = a.ask("what is 12 times 7")
        print(turn.answer, turn.tool_calls, turn.tool_results)
"""
from __future__ import annotations

__all__ = ["Assistant", "Turn"]


def __getattr__(name):
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)
