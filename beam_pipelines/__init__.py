"""The preprocessing Beam job: MIDI and NoteSequence inputs -> a deduplicated, chunked dataset."""
