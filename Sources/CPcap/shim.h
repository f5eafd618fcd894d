// libpcap, for one thing only: compiling a tcpdump filter expression into
// classic BPF (pcap_open_dead + pcap_compile). The stack runs the program
// itself; nothing here opens a device.
#ifndef ANYGATE_CPCAP_H
#define ANYGATE_CPCAP_H

#include <pcap/pcap.h>

#endif
