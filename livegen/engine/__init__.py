"""The real-time engine, pure logic with an injected clock so it runs in tests without ports.

Flow: raw bytes -> ``assembler.NoteAssembler`` (events) -> ``window.Window`` (onset-ordered
notes for the model) and ``phrase.PhraseDetector`` (when to answer) -> ``scheduler.Scheduler``
(absolute deadlines, sends to ``livegen.io.sinks``).  Nothing here imports torch or rtmidi.
"""
