"""`python -m edge.apps.desktop`: open the chat window."""
import sys

from .chat import main

sys.exit(main())
