"""Guard labels and categories: one place for the names and their wording."""
from __future__ import annotations

SAFE = "safe"
UNSAFE = "unsafe"

# Do-Not-Answer risk areas, plus jailbreaks and prompt injection.
MALICIOUS = "malicious_uses"
INFO_HAZARD = "information_hazards"
DISCRIMINATION = "discrimination_toxicity"
MISINFORMATION = "misinformation_harms"
HUMAN_CHATBOT = "human_chatbot_harms"
JAILBREAK = "jailbreak"
INJECTION = "prompt_injection"
CATEGORIES = (MALICIOUS, INFO_HAZARD, DISCRIMINATION, MISINFORMATION, HUMAN_CHATBOT, JAILBREAK, INJECTION)

# How a refusal names each category.
DESCRIPTIONS = {
    MALICIOUS: "malicious use",
    INFO_HAZARD: "an information hazard",
    DISCRIMINATION: "discrimination or toxicity",
    MISINFORMATION: "misinformation or risky advice",
    HUMAN_CHATBOT: "harm in a human-chatbot exchange",
    JAILBREAK: "a jailbreak attempt",
    INJECTION: "a prompt injection",
}

# Stored by fit() when no threshold is given (tests, ad hoc fits); the shipped head
# stores the threshold picked on validation data (edge/guard/train.py).
DEFAULT_THRESHOLD = 0.7
