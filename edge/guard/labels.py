"""Guard labels and categories: one place for the names and their wording.

The hazard categories are Llama Guard 3's S1-S14 (MLCommons' hazard
taxonomy), plus three attacks on the assistant itself: jailbreaks, prompt
injection and system-prompt extraction.
"""
from __future__ import annotations

SAFE = "safe"
UNSAFE = "unsafe"

VIOLENT = "violent_crimes"  # S1
NONVIOLENT = "nonviolent_crimes"  # S2: fraud, theft, hacking, drugs
SEX_CRIMES = "sex_crimes"  # S3
CHILD = "child_exploitation"  # S4
DEFAMATION = "defamation"  # S5
ADVICE = "specialized_advice"  # S6: dangerous medical, legal or financial advice
PRIVACY = "privacy"  # S7
IP = "intellectual_property"  # S8
WEAPONS = "indiscriminate_weapons"  # S9: chemical, biological, nuclear, explosives
HATE = "hate"  # S10
SELF_HARM = "self_harm"  # S11
SEXUAL = "sexual_content"  # S12
ELECTIONS = "elections"  # S13
CODE_ABUSE = "code_interpreter_abuse"  # S14
JAILBREAK = "jailbreak"
INJECTION = "prompt_injection"
EXTRACTION = "system_prompt_extraction"
CATEGORIES = (VIOLENT, NONVIOLENT, SEX_CRIMES, CHILD, DEFAMATION, ADVICE, PRIVACY, IP, WEAPONS, HATE,
              SELF_HARM, SEXUAL, ELECTIONS, CODE_ABUSE, JAILBREAK, INJECTION, EXTRACTION)

# How a refusal names each category.
DESCRIPTIONS = {
    VIOLENT: "violence", NONVIOLENT: "crime", SEX_CRIMES: "a sex crime", CHILD: "child exploitation",
    DEFAMATION: "defamation", ADVICE: "dangerous specialised advice", PRIVACY: "a privacy violation",
    IP: "intellectual-property theft", WEAPONS: "weapons of mass harm", HATE: "hate",
    SELF_HARM: "self-harm", SEXUAL: "sexual content", ELECTIONS: "election misinformation",
    CODE_ABUSE: "code-interpreter abuse", JAILBREAK: "a jailbreak attempt", INJECTION: "a prompt injection",
    EXTRACTION: "system-prompt extraction",
}

# A blocked self-harm prompt gets this instead of a refusal.
SUPPORT = ("I'm really sorry you're going through this, and I can't help with that, but you don't have "
           "to face it alone. Please reach out to someone now: call or text a crisis line (988 in the US "
           "and Canada, 116 123 for Samaritans in the UK and Ireland, 3114 in France; others at "
           "findahelpline.com) or your local emergency number. If you can, tell someone you trust "
           "how you are feeling.")

# Stored by fit() when no threshold is given (tests, ad hoc fits); the shipped head
# stores the threshold picked on validation data (edge/guard/train.py).
DEFAULT_THRESHOLD = 0.7
