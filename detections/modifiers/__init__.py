"""Sigma value modifiers: one small class per modifier, one registry mapping names to them.

Adding a modifier is a class (a :class:`~detections.modifiers.base.MatchType`,
:class:`~detections.modifiers.base.Flag`, :class:`~detections.modifiers.base.Transform` or
:class:`~detections.modifiers.base.Encoding`) plus one line in
:data:`detections.modifiers.registry.MODIFIERS`. The entry points are
:func:`detections.matchers.compile_match` and :func:`detections.matchers.text_test`.
"""
