"""Tests of harkd.voice, the mic trigger and the voice steps."""
