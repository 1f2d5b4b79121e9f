"""voicefox-watcher: hear about VoiceFox campaign transitions once, reliably."""

__version__ = "0.1.0"
