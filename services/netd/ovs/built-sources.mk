# Included after OVS's own Makefile (make -f Makefile -f built-sources.mk sr-built-sources):
# builds automake's BUILT_SOURCES (generated headers and IDL sources) and nothing else.
sr-built-sources: $(BUILT_SOURCES)
.PHONY: sr-built-sources
