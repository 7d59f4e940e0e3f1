# make install / make uninstall (included by the Makefile).
#
#   make install [PREFIX=/usr/local] [SYSCONFDIR=/etc] [DESTDIR=]
#
# What goes where (DESTDIR is prepended to every path):
#   $(PREFIX)/sbin/djinn-consumer                        the binary
#   $(PREFIX)/share/man/man8/djinn-consumer.8            man pages
#   $(PREFIX)/share/man/man5/djinn-consumer.conf.5
#   $(PREFIX)/share/doc/djinn-consumer/djinn-consumer.conf.sample
#   $(SYSCONFDIR)/djinn/consumer.conf                    only when absent
#   $(SYSTEMDUNITDIR)/djinn-consumer.service             systemd unit
#   $(SYSCONFDIR)/init.d/djinn-consumer                  SysVinit script
#   $(SYSCONFDIR)/logrotate.d/djinn-consumer             logrotate snippet
#
# SYSTEMDUNITDIR defaults to $(PREFIX)/lib/systemd/system: systemd reads
# /usr/lib/systemd/system and /usr/local/lib/systemd/system, so the unit is
# found for PREFIX=/usr and the default /usr/local; for another PREFIX give
# SYSTEMDUNITDIR=/etc/systemd/system. Then run: systemctl daemon-reload.
#
# The unit, the init script and the man pages name the binary and the
# config; their paths are rewritten for PREFIX and SYSCONFDIR here. An
# existing config is never overwritten (its sample is always refreshed).
# "make uninstall" removes all of the above but the config.
#
# INSTALL_BIN is the file installed as the binary (default: the one "make"
# builds, rebuilt first when out of date).

# Included anywhere, this file never becomes the default goal.
install_mk_saved_goal := $(.DEFAULT_GOAL)

PREFIX         ?= /usr/local
SYSCONFDIR     ?= /etc
DESTDIR        ?=
BIN            ?= djinn-consumer
INSTALL_BIN    ?= $(BIN)
SBINDIR        ?= $(PREFIX)/sbin
MANDIR         ?= $(PREFIX)/share/man
DOCDIR         ?= $(PREFIX)/share/doc/djinn-consumer
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install

# The shipped files name the Debian paths; this points them at ours.
INSTALL_SED := sed -e 's|/usr/sbin/djinn-consumer|$(SBINDIR)/djinn-consumer|g' \
                   -e 's|/etc/djinn/|$(SYSCONFDIR)/djinn/|g' \
                   -e 's|/etc/default/djinn-consumer|$(SYSCONFDIR)/default/djinn-consumer|g' \
                   -e 's|/usr/share/doc/djinn-consumer/|$(DOCDIR)/|g' \
                   -e 's|/usr/lib/systemd/system/|$(SYSTEMDUNITDIR)/|g'

INSTALLED_FILES := \
  $(DESTDIR)$(SBINDIR)/djinn-consumer \
  $(DESTDIR)$(MANDIR)/man8/djinn-consumer.8 \
  $(DESTDIR)$(MANDIR)/man5/djinn-consumer.conf.5 \
  $(DESTDIR)$(DOCDIR)/djinn-consumer.conf.sample \
  $(DESTDIR)$(SYSTEMDUNITDIR)/djinn-consumer.service \
  $(DESTDIR)$(SYSCONFDIR)/init.d/djinn-consumer \
  $(DESTDIR)$(SYSCONFDIR)/logrotate.d/djinn-consumer

.PHONY: install uninstall

install: $(INSTALL_BIN)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/djinn $(DESTDIR)$(SYSTEMDUNITDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/init.d $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	$(INSTALL) -m 0755 $(INSTALL_BIN) $(DESTDIR)$(SBINDIR)/djinn-consumer
	$(INSTALL_SED) man/djinn-consumer.8 >$(DESTDIR)$(MANDIR)/man8/djinn-consumer.8
	$(INSTALL_SED) man/djinn-consumer.conf.5 >$(DESTDIR)$(MANDIR)/man5/djinn-consumer.conf.5
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/djinn-consumer.8 $(DESTDIR)$(MANDIR)/man5/djinn-consumer.conf.5
	$(INSTALL) -m 0644 etc/djinn-consumer.conf $(DESTDIR)$(DOCDIR)/djinn-consumer.conf.sample
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/djinn/consumer.conf ]; then \
	  echo "install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/djinn/consumer.conf"; \
	else \
	  echo "$(INSTALL) -m 0640 etc/djinn-consumer.conf $(DESTDIR)$(SYSCONFDIR)/djinn/consumer.conf"; \
	  $(INSTALL) -m 0640 etc/djinn-consumer.conf $(DESTDIR)$(SYSCONFDIR)/djinn/consumer.conf; \
	fi
	$(INSTALL_SED) dist/systemd/djinn-consumer.service >$(DESTDIR)$(SYSTEMDUNITDIR)/djinn-consumer.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/djinn-consumer.service
	$(INSTALL_SED) dist/sysvinit/djinn-consumer >$(DESTDIR)$(SYSCONFDIR)/init.d/djinn-consumer
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/djinn-consumer
	$(INSTALL) -m 0644 dist/logrotate/djinn-consumer $(DESTDIR)$(SYSCONFDIR)/logrotate.d/djinn-consumer

uninstall:
	rm -f $(INSTALLED_FILES)
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

.DEFAULT_GOAL := $(install_mk_saved_goal)
