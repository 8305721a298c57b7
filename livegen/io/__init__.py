"""MIDI ports, output sinks and the FluidSynth synthesiser."""
