"""The live view (`livegen run --view`): a Textual terminal UI in a process of its own.

Why a process: Textual draws in Python, and a thread drawing in the daemon would hold the GIL
for milliseconds at a time, just when the scheduler thread must send a note.  So the daemon
side (``link.py``: an observer that only appends, and a thread that sends one small JSON
snapshot every 50 ms over a Unix socket pair) never waits for the view, and the view
(``app.py``, ``roll.py``) can take all the time it likes on another core.  Keys come back
over the same socket as (setting, arguments) and are checked by the OSC settings table.
"""
