"""Lints: documents that load but are probably wrong, one small function per lint code.

A lint is ``(subject, context) -> findings``: :class:`~detections.lints.base.Subject` is one
loaded document (rule, filter, correlation or new terms detector) and a finding is
``(document path, message, suggestion)``; :func:`~detections.lints.registry.run_lints`
positions it (``file:line:col``) and tags it with the lint's code from
:data:`~detections.lints.registry.LINTS`.
"""
