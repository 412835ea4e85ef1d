"""Desktop embedding example: a Tk chat window streaming from `edge.load()` in-process.

    python -m edge.apps.desktop [--model NAME] [--temperature 0.7]

See chat.py for how the model stays off the UI thread.
"""
