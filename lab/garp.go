package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// announce sends gratuitous ARP requests for n from interface ifname of the network namespace
// at nsPath, as a host does when an address comes to it (and as CNI plugins and hypervisors
// do after a move): bridges learn the MAC's new port, peers update their ARP caches.
//
// Written by hand on x/sys (an AF_PACKET socket and a 42-byte frame) rather than with a
// library: the frame is fixed, and the part that needs care is the namespace, which a library
// would not handle either.
func announce(nsPath, ifname string, n ContainerNet) error {
	errc := make(chan error, 1)
	go func() {
		// The thread enters the namespace and is never unlocked: it ends with this goroutine
		// and takes the namespace with it, so no other goroutine ever runs in it.
		runtime.LockOSThread()
		errc <- func() error {
			fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open %s: %w", nsPath, err)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter %s: %w", nsPath, err)
			}
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
			if err != nil {
				return fmt.Errorf("packet socket: %w", err)
			}
			defer unix.Close(s)
			frame := garpFrame(n)
			to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
			copy(to.Addr[:], broadcastMAC)
			// Three, as arping -U and the kernel's arp_notify do not bother to: a lost first
			// frame must not leave the old port learnt.
			for i := 0; i < 3; i++ {
				if err := unix.Sendto(s, frame, 0, to); err != nil {
					return fmt.Errorf("send: %w", err)
				}
			}
			return nil
		}()
	}()
	return <-errc
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// garpFrame is an Ethernet broadcast ARP request for n's address from n's MAC, asking for
// itself (sender and target address equal): a gratuitous ARP (RFC 5227).
func garpFrame(n ContainerNet) []byte {
	ip := n.Addr.Addr().As4()
	f := make([]byte, 0, 42)
	f = append(f, broadcastMAC...)
	f = append(f, n.MAC...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1)             // hardware: Ethernet
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP) // protocol: IPv4
	f = append(f, 6, 4)                                 // their lengths
	f = binary.BigEndian.AppendUint16(f, 1)             // request
	f = append(f, n.MAC...)
	f = append(f, ip[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, ip[:]...)
	return f
}

// htons puts v in network byte order, for the little-endian machines ftwin-migrate runs on
// (amd64, arm64).
func htons(v uint16) uint16 { return v<<8 | v>>8 }
