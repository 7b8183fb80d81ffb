"""Independent references: the original Emotion-LLaMA modules' layouts, written from its code at tiny size.

Importers are tested against these, never against their own key tables run back.
"""
